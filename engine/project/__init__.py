"""The user's project as plain text: reading its Python files, locating the function to complete
(even in text that does not parse yet) and collecting the test cases that call it.
Imports only the standard library and engine.errors; every other part of the engine may use it."""
