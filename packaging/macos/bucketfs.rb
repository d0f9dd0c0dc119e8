# Homebrew formula for bucketfs (macOS with macFUSE). Untested on a Mac:
# see packaging/README.md. Install the current main branch with
#   brew install --HEAD ./packaging/macos/bucketfs.rb
class Bucketfs < Formula
  desc "Mount an S3-compatible bucket (Backblaze B2, AWS S3) as a directory"
  homepage "https://github.com/bucketfs/bucketfs"
  license "Apache-2.0"
  head "https://github.com/bucketfs/bucketfs.git", branch: "main"

  depends_on "pkgconf" => :build
  depends_on "rust" => :build
  depends_on :macos

  def install
    system "cargo", "install", "--locked", *std_cargo_args
    mkdir "man"
    system bin/"bucketfs", "man", "man"
    man1.install Dir["man/*.1"]
    generate_completions_from_executable(bin/"bucketfs", "completions")
  end

  def caveats
    <<~EOS
      bucketfs needs macFUSE, which Homebrew cannot install as a dependency:
        brew install --cask macfuse
      then allow its system extension in System Settings and reboot.
    EOS
  end

  test do
    assert_match "bucketfs", shell_output("#{bin}/bucketfs --version")
    assert_match "unknown mount option", shell_output("#{bin}/bucketfs b /tmp -o bogus 2>&1", 2)
  end
end
