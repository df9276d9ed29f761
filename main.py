"""lacy: pretrain a small LM with a <CALL> token. See README.md; e.g. python main.py fit --config configs/lacy.yaml"""
from lacy.cli import cli_main
from lacy.errors import entry_point

if __name__ == "__main__":
    entry_point(cli_main)()
