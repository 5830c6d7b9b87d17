"""`catdog doctor`: this machine's real state in one screen, each problem with its fix, exit 1 only when a command
would stop."""

from __future__ import annotations

from helpers import catdog, labeled_folder, ok_json

from catdog_cli.cli.doctor import render_report
from catdog_cli.runtime import device
from catdog_cli.runtime.environment import Finding


def test_doctor_reports_versions_threads_precision_datasets_and_weights(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("CATDOG_HOME", str(home))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(device, "_THREADS", None)  # chosen again, from the environment above
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert catdog("fetch", "mine", "--from", labeled_folder(tmp_path / "mine")).exit_code == 0
    (home / "odd").mkdir()
    report = ok_json(catdog("doctor", "--json"))
    assert report["ok"] is True
    sections = report["sections"]
    assert {"versions", "torch", "GPU", "CPU", "precision", "weights", "data"} <= set(sections)
    by_topic = {f["topic"]: f for findings in sections.values() for f in findings}
    assert by_topic["torch pair"]["text"].endswith("a working pair (compiled operators load)")
    assert by_topic["threads"]["text"].startswith("3 (OMP_NUM_THREADS)")
    assert by_topic["evaluate, predict"]["text"].startswith("cpu, fp32")
    assert by_topic["mine"]["text"] == "cat, dog: train 12, val 4"
    assert "a folder catdog fetch did not make" in by_topic["odd"]["text"]
    assert by_topic["not fetched"]["text"].startswith("hymenoptera, catdog, petimages")
    assert by_topic["offline"]["text"] == "no ImageNet weights cached yet"
    assert "catdog fetch --weights resnet34" in by_topic["resnet34"]["fix"]  # a note, not blocking
    assert not any(f.get("blocking") for f in by_topic.values())


def test_a_blocking_problem_says_what_to_fix_and_a_note_does_not_stop():
    notes = {"weights": [Finding("resnet34", "not cached", "catdog fetch --weights resnet34")]}
    assert render_report(notes).plain.endswith("catdog can run here (1 note(s) above)\n")
    blocking = {**notes, "data": [Finding("data root", "is a file", "set CATDOG_HOME", blocking=True)]}
    text = render_report(blocking).plain
    assert " x data root  is a file\n              fix: set CATDOG_HOME\n" in text
    assert text.endswith("catdog cannot run here: fix data root (above)\n")


def test_threads_follow_what_others_use_now_unless_told(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(device.THREADS_ENV, raising=False)
    monkeypatch.setattr(device, "cpu_cores", lambda: 2)
    monkeypatch.setattr(device.os, "getloadavg", lambda: (1.1, 0.0, 0.0))  # catdog's own last command, say
    monkeypatch.setattr(device.cpu_load, "busy_cores", lambda: 0.1)
    assert device.choose_threads() == (2, "2 cores, others busy on 0.1: all free")  # the load average is not read
    monkeypatch.setattr(device.cpu_load, "busy_cores", lambda: 0.9)
    assert device.choose_threads() == (1, "2 cores, others busy on 0.9: 1 left free by others")
    monkeypatch.setattr(device.cpu_load, "busy_cores", lambda: 1.8)
    assert device.choose_threads() == (1, "2 cores, others busy on 1.8: all taken by others, so one thread")
    monkeypatch.setattr(device, "cpu_cores", lambda: 1)  # taskset -c 0
    assert device.choose_threads() == (1, "1 core, others busy on 1.8: all taken by others, so one thread")


def test_without_proc_stat_threads_follow_the_load_average_unless_told(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(device.THREADS_ENV, raising=False)
    monkeypatch.setattr(device.cpu_load, "busy_cores", lambda: None)  # macOS
    monkeypatch.setattr(device, "cpu_cores", lambda: 8)
    monkeypatch.setattr(device.os, "getloadavg", lambda: (5.4, 0.0, 0.0))
    assert device.choose_threads() == (3, "8 cores, load 5.4: 3 left free by others")
    monkeypatch.setattr(device.os, "getloadavg", lambda: (30.0, 0.0, 0.0))
    assert device.choose_threads() == (1, "8 cores, load 30.0: all taken by others, so one thread")  # never none
    monkeypatch.setattr(device.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert device.choose_threads() == (8, "8 cores, load 0.2: all free")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert device.choose_threads() == (2, "OMP_NUM_THREADS")
    monkeypatch.setenv(device.THREADS_ENV, "5")  # --threads wins
    assert device.choose_threads() == (5, "--threads")
