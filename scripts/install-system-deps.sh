#!/bin/sh
# Debian packages the test suite drives for real: Chromium (WebAuthn), SoftHSM2 and OpenSC
# (PKCS#11 smart cards), nginx (TLS client certificates). Installs only what is missing.
set -eu
PACKAGES="chromium softhsm2 opensc nginx curl libengine-pkcs11-openssl"
missing=""
for pkg in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
command -v npm >/dev/null || missing="$missing nodejs npm"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "Missing Debian packages:$missing (run as root: apt-get install$missing)" >&2; exit 1
fi
echo "Installing Debian packages:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
