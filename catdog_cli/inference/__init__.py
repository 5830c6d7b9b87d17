"""Using a trained model: load it once, evaluate, predict, calibrate, test-time augmentation, Grad-CAM, export.
Never imports `training`."""
