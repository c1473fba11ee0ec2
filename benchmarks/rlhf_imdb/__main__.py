from benchmarks.rlhf_imdb.cli import main

main()
