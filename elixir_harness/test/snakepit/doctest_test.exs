defmodule Snakepit.DoctestTest do
  # The `iex>` examples of the public modules' docs, which docs/api/elixir.md
  # shows as ```iex blocks: each runs here (tests/test_api_docs.py checks that
  # every module with one is listed). The pools they start are linked to the
  # test's process and stop with it; their names differ, so none waits for
  # the previous test's to go.
  use ExUnit.Case, async: false

  doctest Snakepit
  doctest Snakepit.Pool
  doctest Snakepit.Stream
  doctest Snakepit.Tensor
  doctest Snakepit.Worker
end
