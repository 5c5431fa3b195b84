"""A small module to try egcfg on: the bodies are left for the model to write."""


def running_total(xs: list[int]) -> list[int]:
    """Return the running sums of xs: running_total([1, 2, 3]) == [1, 3, 6]."""


def count_vowels(text: str) -> int:
    """Count the vowels (a, e, i, o, u, either case) in text."""
