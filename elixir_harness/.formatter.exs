[
  inputs: [
    "{mix,.formatter}.exs",
    "{lib,test}/**/*.{ex,exs}",
    "../examples/**/*.exs",
    "../benchmarks/**/*.exs"
  ]
]
