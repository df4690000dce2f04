// swift-tools-version:6.2
import PackageDescription

/// Settings shared by every Swift target: Swift 6 language mode is the package default; these
/// upcoming features keep imports and existentials explicit, and a warning fails the build (of
/// this package's targets only, not of its dependencies).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "Crew",
    products: [
        .library(name: "Crew", targets: ["Crew"]),
        .executable(name: "crew", targets: ["crew"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // What Swift cannot import directly: the variadic prctl, process naming.
        .target(name: "CCrewSystem"),
        // zlib, for the demo's PNG encoder only; the library does not link it.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .target(
            name: "Crew",
            dependencies: [
                "CCrewSystem",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "crew",
            dependencies: [
                "Crew", "CZlib",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Jobs the tests run, shared by the test target and the worker executable below.
        .target(name: "CrewTestJobs", dependencies: ["Crew", .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        // Under `swift test` the running binary is the test runner, which has no worker mode:
        // the tests point their pools at this executable instead.
        .executableTarget(
            name: "CrewTestWorker",
            dependencies: ["Crew", "CrewTestJobs"],
            swiftSettings: swiftSettings
        ),
        // The README's quick start, compiled and run by the tests.
        .executableTarget(name: "QuickStart", dependencies: ["Crew"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CrewTests",
            dependencies: ["Crew", "CrewTestJobs", "CrewTestWorker", "QuickStart", "crew"],
            swiftSettings: swiftSettings
        ),
    ]
)
