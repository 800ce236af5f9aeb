"""dupecheck: is this photo already on my Instagram?"""

__version__ = "2.1.0"  # as CHANGELOG.md's latest release
