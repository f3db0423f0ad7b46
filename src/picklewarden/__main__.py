from picklewarden.cli import run

run()
