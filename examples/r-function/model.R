# An R model for examples/r-function: a queue simulation with exponential service times.
# simulate(n, rate) returns a named list, which becomes a JSON object (a dict in Python).
simulate <- function(n, rate = 1, seed = 1) {
  set.seed(seed)
  service <- rexp(n, rate)
  list(
    n = n,
    mean = mean(service),
    p95 = unname(quantile(service, 0.95)),
    seed = seed
  )
}
