# A Julia model for examples/julia-function: a random walk's final position and maximum.
# simulate(n; drift, seed) returns a Dict, which becomes a JSON object (a dict in Python).
using Random

function simulate(n; drift = 0.0, seed = 1)
    rng = MersenneTwister(seed)
    position = 0.0
    highest = 0.0
    for _ in 1:n
        position += drift + randn(rng)
        highest = max(highest, position)
    end
    return Dict("n" => n, "final" => position, "max" => highest, "seed" => seed)
end
