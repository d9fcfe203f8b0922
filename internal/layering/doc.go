// Package layering holds a test of the module's import layering: which of
// its packages may depend on what (see TestLayering). It has no code.
package layering
