"""`python -m emulator serve ...`"""

from emulator.cli import emulator

if __name__ == "__main__":
    emulator(prog_name="python -m emulator")
