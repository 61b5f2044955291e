# Shared by scripts/serve and scripts/test (sourced): make .venv and install
# tcpchat (with EXTRAS) only when the venv is missing, the project changed
# since the last install, or EXTRAS were not installed yet, so a start needs
# no package index once set up (and takes well under a second to begin).
stamp_of() {
    # everything pip would install from: the package, the plugin, the metadata
    find setup.cfg setup.py tcpchat twisted -type f \( -name '*.py' -o -name '*.cfg' -o -name '*.sql' \
        -o -name '*.js' -o -name '*.html' -o -name '*.css' \) -print0 2>/dev/null | sort -z | xargs -0 cat | cksum
}
ensure_venv() {
    extras="$1"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    # a setuptools that builds wheels by itself (70.1+), so later installs of a changed project need no index
    .venv/bin/python -c 'from setuptools.command import bdist_wheel' 2>/dev/null ||
        .venv/bin/python -m pip install --quiet --disable-pip-version-check 'setuptools>=70.1'
    want=$(stamp_of)
    have=$(sed -n 1p .venv/.tcpchat-installed 2>/dev/null || true)
    had=$(sed -n 2p .venv/.tcpchat-installed 2>/dev/null || true)
    if [ "$have" != "$want" ] || { [ -n "$extras" ] && [ "$had" != "$extras" ]; }; then
        [ -n "$had" ] && [ -z "$extras" ] && extras="$had"  # keep what was there
        # --no-build-isolation: build with the venv's own setuptools, not a fresh download
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-build-isolation ".$extras" ||
            .venv/bin/python -m pip install --quiet --disable-pip-version-check ".$extras"
        printf '%s\n%s\n' "$want" "$extras" > .venv/.tcpchat-installed
    fi
}
