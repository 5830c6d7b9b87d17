from catdog_cli.cli.app import main

main()
