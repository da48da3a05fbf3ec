#!/bin/sh
# `make dialyzer`: Debian's dialyzer straight on the harness's compiled modules
# (no hex, so no dialyxir). The PLT of the OTP and Elixir apps the harness uses
# is built once per OTP/Elixir version under .cache/dialyzer/ (a few minutes;
# ignored by git) and reused; the harness itself is analysed on every run.
set -eu
cd "$(dirname "$0")/.."
command -v dialyzer >/dev/null 2>&1 || {
  echo "dialyzer not found: apt-get install erlang-dialyzer" >&2
  exit 1
}
(cd elixir_harness && MIX_ENV=dev mix compile)
ebin=elixir_harness/_build/dev/lib/snakepit_py/ebin
[ -d "$ebin" ] || ebin=elixir_harness/_build/dev/lib/snakepit/ebin
libs=$(elixir -e '
  apps = [:erts, :kernel, :stdlib, :inets, :elixir, :logger]
  IO.puts(Enum.map_join(apps, " ", &:code.lib_dir(&1, :ebin)))')
elixir_ebin=$(elixir -e 'IO.write(:code.lib_dir(:elixir, :ebin))')  # reads Elixir's debug_info
versions=$(elixir -e 'IO.write("otp#{System.otp_release()}-elixir#{System.version()}")')
plt=.cache/dialyzer/$versions.plt
if [ ! -f "$plt" ]; then
  mkdir -p .cache/dialyzer
  echo "Building the dialyzer PLT for $versions (once; a few minutes)..."
  # (dialyzer exits 2 when the apps themselves have warnings: the PLT is still written)
  dialyzer -pa "$elixir_ebin" --build_plt --output_plt "$plt.tmp" $libs >/dev/null || [ $? -eq 2 ]
  mv "$plt.tmp" "$plt"
fi
echo "dialyzer: $ebin"
exec dialyzer -pa "$elixir_ebin" --no_check_plt --plt "$plt" "$ebin"
