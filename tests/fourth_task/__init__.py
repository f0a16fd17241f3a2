"""A fourth task defined outside the package, to prove the extension steps of docs/extending.md:
see return_type.py and tests/test_fourth_task.py."""
