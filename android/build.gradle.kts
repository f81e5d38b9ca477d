// Roam for Android: the generated Kotlin bindings (src/main/kotlin/dev/roam/roam_ffi.kt, made by
// scripts/gen-bindings.sh), the Flow layer (RoamFlows.kt), and libroam_ffi.so for each ABI in
// src/main/jniLibs (built by ./build-jni.sh with cargo-ndk; not checked in).
//
// Include it from an app's settings.gradle.kts:
//     include(":roam")
//     project(":roam").projectDir = file("path/to/roam/android")
// and depend on it: implementation(project(":roam")). The app's build supplies the plugin
// versions; settings.gradle.kts next to this file supplies them when the module is built on its
// own (`gradle -p android assembleRelease`).
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.roam"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets {
        getByName("main") {
            // The Rust libraries, one directory per ABI (arm64-v8a, armeabi-v7a, x86_64).
            jniLibs.srcDirs("src/main/jniLibs")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    kotlinOptions {
        jvmTarget = "17"
    }

    testOptions {
        unitTests {
            // The JVM unit tests load the host's libroam_ffi.so through JNA (see
            // scripts/test-kotlin.sh): -Djna.library.path=<cargo target>/debug.
            all {
                it.systemProperty(
                    "jna.library.path",
                    System.getenv("ROAM_FFI_LIB_DIR") ?: "${rootDir}/../target/debug",
                )
                System.getenv("ROAM_SERVER_BIN")?.let { bin -> it.environment("ROAM_SERVER_BIN", bin) }
            }
        }
    }
}

dependencies {
    // The generated bindings call the Rust library through JNA; the AAR carries its Android
    // native parts.
    implementation("net.java.dev.jna:jna:5.15.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.9.0")

    // Plain-JVM unit tests: the desktop JNA jar, not the AAR.
    testImplementation("net.java.dev.jna:jna:5.15.0")
    testImplementation("junit:junit:4.13.2")
    testImplementation("org.jetbrains.kotlin:kotlin-test-junit:2.1.0")
}
