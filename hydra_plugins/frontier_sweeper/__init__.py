"""`hydra/sweeper=frontier`: each configuration's largest solvable gap (harness/frontier.py)."""
