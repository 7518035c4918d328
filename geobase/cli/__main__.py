from geobase.cli import main

main()
