"""The ``stae`` command line: argument parsing and the user-error boundary. Nothing below this
package parses arguments; each command turns its arguments into a library call."""
