"""Defaults a person sees (in --help, on the phone page's form) that the library shares.

Free of heavy imports: the CLI reads them when it defines its options, before it imports
the library (a cold `check` starts its model sooner that way).
"""

DEFAULT_TOP_K = 5  # archive photos listed per checked photo
DEFAULT_MODEL = "resnet50"  # the embedding model an index is made with unless one is named
# every registered model, as --help lists them (engines.registry.MODELS holds their specs;
# a test keeps the two equal)
MODEL_NAMES = ("resnet50", "mobileclip-s2", "efficientnet-lite0")
