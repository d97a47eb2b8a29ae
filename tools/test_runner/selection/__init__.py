"""Affected-test selection: which tests a change can touch, from what each test executed last time.

`blocks` cuts a Python file into checksummed blocks (one per function, plus the module level and
the whole file); `snapshot` fingerprints what the recorder cannot see (configuration, non-Python
files, the environment); `store` keeps each test's dependencies per root in the test database;
`plan` decides, with no I/O, which tests and files a run can skip.
"""
