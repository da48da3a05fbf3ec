defmodule Snakepit.DoctestTest do
  # The `iex>` examples of the public modules' docs, which docs/api/elixir.md
  # shows as ```iex blocks: each runs here (tests/test_api_docs.py checks that
  # every module with one is listed).
  use ExUnit.Case, async: false

  doctest Snakepit.Tensor
end
