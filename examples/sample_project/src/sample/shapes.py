import os


def classify(n):
    if n < 0:
        return "negative"
    elif n == 0:
        return "zero"
    elif n % 2 == 0:
        return "even"
    return "odd"


def area(width, height=[]):
    return width * height
