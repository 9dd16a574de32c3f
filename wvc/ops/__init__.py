"""Operations on a repository, one module each; every one returns a typed result."""
