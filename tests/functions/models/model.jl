# The Julia side of the shared envelope conformance cases (tests/functions/test_json_runners.py).
add(a, b) = a + b
scale(x; factor = 1) = x * factor
series(n; step = 1) = collect(range(1.5; step = step, length = n))
describe(n, label) = Dict("n" => n, "label" => label)
inner(x) = x < 0 ? error("negative input: $(x)") : x * x
square(x) = inner(x)
identity_value(x) = x
