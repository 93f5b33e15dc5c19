"""Building training data for the methods: translating an English instruction set into X (`translate`)."""
