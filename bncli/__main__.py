"""python -m bncli --help"""

from bncli.cli import main

main()
