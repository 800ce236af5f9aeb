"""dupecheck: is this photo already on my Instagram?"""

__version__ = "1.0.0"
