// swift-tools-version:6.0
// Roam for Swift: the generated bindings (Sources/Roam/Roam.swift, made by
// scripts/gen-bindings.sh) over the Rust library libroam_ffi, plus a thin Swift layer
// (Roam+Async.swift: AsyncStreams over the listeners; StaticTokenProvider.swift).
//
// - Linux (this repository's CI): RoamFFI is a system-library target (Sources/RoamFFI: the
//   generated C header plus a modulemap that links `roam_ffi`), and the linker finds
//   libroam_ffi.so in the cargo target directory: $ROAM_FFI_LIB_DIR if set, else
//   ../target/debug. Tests run with that directory on LD_LIBRARY_PATH (and it is on the rpath).
// - Apple platforms: RoamFFI is a binaryTarget over RoamFFI.xcframework, built on macOS by
//   ios/build-xcframework.sh (static libroam_ffi.a for iOS devices, iOS simulators and macOS,
//   each with the header and a module.modulemap).
import Foundation
import PackageDescription

#if os(Linux)
let packageDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path
let libDir = ProcessInfo.processInfo.environment["ROAM_FFI_LIB_DIR"]
    ?? URL(fileURLWithPath: packageDir + "/../target/debug").standardized.path
let ffiTarget: Target = .systemLibrary(name: "RoamFFI", path: "Sources/RoamFFI")
let linkerSettings: [LinkerSetting] = [
    .unsafeFlags(["-L", libDir, "-Xlinker", "-rpath", "-Xlinker", libDir]),
]
#else
let ffiTarget: Target = .binaryTarget(name: "RoamFFI", path: "RoamFFI.xcframework")
let linkerSettings: [LinkerSetting] = []
#endif

let package = Package(
    name: "Roam",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Roam", targets: ["Roam"]),
    ],
    targets: [
        ffiTarget,
        .target(
            name: "Roam",
            dependencies: ["RoamFFI"],
            path: "Sources/Roam",
            linkerSettings: linkerSettings
        ),
        .testTarget(
            name: "RoamTests",
            dependencies: ["Roam"],
            path: "Tests/RoamTests"
        ),
    ]
)
