from catdog_cli.cli import main

main()
