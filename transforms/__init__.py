"""payrecon's Beam transforms: composites and the DoFns they are made of."""
