#!/usr/bin/env bash
# Build sonic-annotator 1.6 and the QM + BBC Vamp plugins from source, at exactly the
# commits and with exactly the fixes of shared/golden/README.md ("Versions and how they
# were built"), so the image reproduces the golden CSVs. Runs in the extractor image's
# build stage (Debian 12, see deploy/Dockerfile); installs into $PREFIX:
#   $PREFIX/bin/sonic-annotator
#   $PREFIX/lib/vamp/{qm-vamp-plugins,bbc-vamp-plugins}.{so,cat,n3}
set -euo pipefail

PREFIX="${PREFIX:-/opt/sonic-annotator}"
JOBS="${JOBS:-$(nproc)}"
SRC="${SRC:-/src}"

# owner/repo commit target-subfolder
SONIC_ANNOTATOR="sonic-visualiser/sonic-annotator a0e53dd3330d30026de9142e29746409fb0f3189"
SA_LIBS=(
  "sonic-visualiser/svcore b403f10819e9b51e3aa7562ffe40d753fccff6f3 svcore"
  "vamp-plugins/vamp-plugin-sdk c3ef877327f1b081b95a1d05349c297f8c4454f0 vamp-plugin-sdk"
  "sonic-visualiser/vamp-plugin-load-checker ed75cff475c72381aedad936c72b93b4f38157d3 checker"
  "piper-audio/piper-vamp-cpp f0d3ab2952b21d287b481759bda986427df10ef7 piper-vamp-cpp"
  "breakfastquay/dataquay 0e308a460b2c67c7aef751ce208370e3d4802f82 dataquay"
  "breakfastquay/bqvec e09311069ab88b3d1346c8ecbeb0857aa862fc89 bqvec"
  "breakfastquay/bqfft 170df42fce02ce9f64595475d1d714481fa0aab1 bqfft"
  "breakfastquay/bqresample 9611f62696211374bed9f0d863ee3a676a21d863 bqresample"
  "breakfastquay/bqthingfactory bef780ee7b41a93a7daa2b08a5c90f3a8b04318c bqthingfactory"
  "breakfastquay/bqaudiostream 49cd8c8e8603d09422575907c313c0a6748840c5 bqaudiostream"
)
QM_PLUGINS="c4dm/qm-vamp-plugins c918afc070f79489758bb2dab6895972bd82066b"
QM_DSP="c4dm/qm-dsp e34a3cc188332ed7c33cd9257ef164de5b587191"
VAMP_SDK="vamp-plugins/vamp-plugin-sdk c3ef877327f1b081b95a1d05349c297f8c4454f0"
BBC_PLUGINS="bbc/bbc-vamp-plugins be50e19670d7702b706581d71f84d55c5ade290e"

# fetch OWNER/REPO COMMIT DEST: the source tree of one commit (GitHub archive tarball)
fetch() {
  local repo="$1" commit="$2" dest="$3"
  mkdir -p "$dest"
  curl -fsSL --retry 5 "https://github.com/$repo/archive/$commit.tar.gz" | tar -xz --strip-components=1 -C "$dest"
}

mkdir -p "$SRC" "$PREFIX/bin" "$PREFIX/lib/vamp"

# --- sonic-annotator 1.6 ---------------------------------------------------------------
read -r repo commit <<<"$SONIC_ANNOTATOR"
fetch "$repo" "$commit" "$SRC/sonic-annotator"
for lib in "${SA_LIBS[@]}"; do
  read -r repo commit sub <<<"$lib"
  rm -rf "${SRC:?}/sonic-annotator/$sub"
  fetch "$repo" "$commit" "$SRC/sonic-annotator/$sub"
done
(
  cd "$SRC/sonic-annotator"
  mv repoint.pri repoint.pri.disabled        # else make tries to run repoint (network)
  ./configure
  sed -i 's|QMAKE_POST_LINK=/bin/bash tests/test.sh|#|' runner.pro
  qmake -o Makefile.runner runner.pro
  # g++ 12: svcore uses std::rel_ops etc. without including <utility>
  sed -i 's|^CXXFLAGS      = |CXXFLAGS      = -include utility -include limits -include cstdint -include memory |' \
    Makefile.base Makefile.runner
  make -j"$JOBS" -f Makefile.base
  make -j"$JOBS" -f Makefile.runner
  strip sonic-annotator
  install -m 0755 sonic-annotator "$PREFIX/bin/sonic-annotator"
)
"$PREFIX/bin/sonic-annotator" -v | grep -qx '1.6'

# --- qm-vamp-plugins v1.8.0-5 (with its pinned qm-dsp and vamp-plugin-sdk) --------------
read -r repo commit <<<"$QM_PLUGINS"
fetch "$repo" "$commit" "$SRC/qm-vamp-plugins"
read -r repo commit <<<"$QM_DSP"
rm -rf "$SRC/qm-vamp-plugins/lib/qm-dsp"
fetch "$repo" "$commit" "$SRC/qm-vamp-plugins/lib/qm-dsp"
read -r repo commit <<<"$VAMP_SDK"
rm -rf "$SRC/qm-vamp-plugins/lib/vamp-plugin-sdk"
fetch "$repo" "$commit" "$SRC/qm-vamp-plugins/lib/vamp-plugin-sdk"
(
  cd "$SRC/qm-vamp-plugins"
  make -j"$JOBS" -f build/linux/Makefile.linux64
  install -m 0644 qm-vamp-plugins.so qm-vamp-plugins.cat qm-vamp-plugins.n3 "$PREFIX/lib/vamp/"
)

# --- bbc-vamp-plugins v1.1-4 (against Debian's vamp-plugin-sdk 2.10.0) ------------------
read -r repo commit <<<"$BBC_PLUGINS"
fetch "$repo" "$commit" "$SRC/bbc-vamp-plugins"
(
  cd "$SRC/bbc-vamp-plugins"
  make -f Makefile.linux VAMP_SDK_DIR=/usr/include \
    LDFLAGS="-shared -Wl,-soname=bbc-vamp-plugins.so /usr/lib/x86_64-linux-gnu/libvamp-sdk.a -Wl,--version-script=src/vamp-plugin.map"
  install -m 0644 bbc-vamp-plugins.so "$PREFIX/lib/vamp/"
  find . -maxdepth 2 \( -name 'bbc-vamp-plugins.cat' -o -name 'bbc-vamp-plugins.n3' \) -exec install -m 0644 {} "$PREFIX/lib/vamp/" \;
)

VAMP_PATH="$PREFIX/lib/vamp" "$PREFIX/bin/sonic-annotator" -l | grep -q 'vamp:qm-vamp-plugins:qm-mfcc:coefficients'
VAMP_PATH="$PREFIX/lib/vamp" "$PREFIX/bin/sonic-annotator" -l | grep -q 'vamp:bbc-vamp-plugins:bbc-spectral-contrast'
echo "sonic-annotator $("$PREFIX/bin/sonic-annotator" -v) and plugins installed in $PREFIX"
