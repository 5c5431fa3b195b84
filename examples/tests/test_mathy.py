from mathy import count_vowels, running_total


def test_running_total():
    assert running_total([1, 2, 3]) == [1, 3, 6]
    assert running_total([]) == []
    assert running_total([5, -5, 2]) == [5, 0, 2]


def test_count_vowels():
    assert count_vowels("hello") == 2
    assert count_vowels("AEIOU xyz") == 5
