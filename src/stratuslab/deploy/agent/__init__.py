"""The node agent: one standard-library file the server ships to every node instance."""
