"""`python -m zhizao`: the same CLI as the `zhizao` console script (used to start child processes)."""

from zhizao.cli import main

main()
