from driftmon.cli import main

main(prog_name="driftmon")
