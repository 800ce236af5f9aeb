"""Defaults a person sees (in --help, on the phone page's form) that the library shares.

Free of heavy imports: the CLI reads them when it defines its options, before it imports
the library (a cold `check` starts its model sooner that way).
"""

DEFAULT_TOP_K = 5  # archive photos listed per checked photo
