"""Small reusable widgets: cards, metric tiles, notices, charts."""
