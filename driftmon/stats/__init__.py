"""Statistics: pure tensor math, counts in, statistics out."""
