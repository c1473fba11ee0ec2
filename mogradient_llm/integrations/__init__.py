"""mogradient's aggregators inside other engines' trainers (TRL: :mod:`.trl`)."""
