defmodule SnakepitPy.MixProject do
  use Mix.Project

  # The OTP application is :snakepit_py, not :snakepit: the hex package
  # `snakepit` (another project) is an OTP app named :snakepit, so a project
  # depends on this harness as {:snakepit_py, path: ... | git: ...} and can't
  # have hex's package resolved in its place. The modules keep the Snakepit
  # prefix (docs/elixir.md says what that means).
  def project do
    [
      app: :snakepit_py,
      version: "0.1.0",
      elixir: "~> 1.14",
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: []
    ]
  end

  def application do
    # :inets: Snakepit.Metrics serves /metrics on its httpd (OTP, no hex)
    [extra_applications: [:logger, :inets]]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
