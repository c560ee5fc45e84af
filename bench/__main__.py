"""`python -m bench` (`make bench`): the whole benchmark suite, one table (bench/suite.py)."""

from bench.suite import main

main()
