"""In silico trials: virtual populations, trial arms, endpoints, at scale."""
