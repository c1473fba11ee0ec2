"""``python -m mogradient_llm`` = ``mogradient-llm``."""

from mogradient_llm.cli import main

main()
