from lorasweep.cli import main

main()
