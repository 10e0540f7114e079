"""The adopter trial's project is someone else's suite, run by `make adopter-trial`: not ours."""

collect_ignore = ["project"]
