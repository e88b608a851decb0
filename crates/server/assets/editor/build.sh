#!/usr/bin/env bash
# Rebuilds ../editor.js from editor.mjs (run after changing either, or to update CodeMirror).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund 2>/dev/null || npm install --no-audit --no-fund
npx esbuild editor.mjs --bundle --minify --format=iife --legal-comments=eof --target=es2020 --outfile=../editor.js
