from lamina.cli.main import main

main()
