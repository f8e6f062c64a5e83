"""Peer task queues for bench.suite. These modules run under bench/.peers-venv, not the project's
venv: each is started as `python -m bench.peers.<name> ROLE` by bench.peer_bench."""
