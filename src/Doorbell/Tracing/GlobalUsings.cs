// Every model emits to its machine's trace; the tracing types are in scope everywhere in the library.
global using Doorbell.Tracing;
