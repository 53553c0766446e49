"""eql package."""
