from hwnas.cli import entry

entry()
