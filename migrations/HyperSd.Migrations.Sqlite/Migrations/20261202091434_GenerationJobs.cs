using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace HyperSd.Migrations.Sqlite.Migrations
{
    /// <inheritdoc />
    public partial class GenerationJobs : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropForeignKey(
                name: "fk_generated_images_artifacts_artifact_id",
                table: "generated_images");

            migrationBuilder.DropForeignKey(
                name: "fk_generated_images_generation_chunks_chunk_id",
                table: "generated_images");

            migrationBuilder.DropTable(
                name: "generation_chunks");

            migrationBuilder.DropIndex(
                name: "ix_generation_jobs_run_id",
                table: "generation_jobs");

            migrationBuilder.DropIndex(
                name: "ix_generated_images_artifact_id",
                table: "generated_images");

            migrationBuilder.DropIndex(
                name: "ix_generated_images_chunk_id",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "finished_at",
                table: "generation_jobs");

            migrationBuilder.DropColumn(
                name: "lora",
                table: "generation_jobs");

            migrationBuilder.RenameColumn(
                name: "state",
                table: "generation_jobs",
                newName: "spec_json");

            migrationBuilder.RenameColumn(
                name: "chunk_id",
                table: "generated_images",
                newName: "stage_id");

            migrationBuilder.RenameColumn(
                name: "artifact_id",
                table: "generated_images",
                newName: "sha256");

            migrationBuilder.AddColumn<int>(
                name: "chunk_count",
                table: "generation_jobs",
                type: "INTEGER",
                nullable: false,
                defaultValue: 0);

            migrationBuilder.AddColumn<int>(
                name: "image_count",
                table: "generation_jobs",
                type: "INTEGER",
                nullable: false,
                defaultValue: 0);

            migrationBuilder.AddColumn<string>(
                name: "name",
                table: "generation_jobs",
                type: "TEXT",
                nullable: false,
                defaultValue: "");

            migrationBuilder.AddColumn<string>(
                name: "output_path",
                table: "generation_jobs",
                type: "TEXT",
                nullable: false,
                defaultValue: "");

            migrationBuilder.AddColumn<int>(
                name: "attempt",
                table: "generated_images",
                type: "INTEGER",
                nullable: false,
                defaultValue: 0);

            migrationBuilder.AddColumn<long>(
                name: "created_at",
                table: "generated_images",
                type: "INTEGER",
                nullable: false,
                defaultValue: 0L);

            migrationBuilder.AddColumn<int>(
                name: "image_index",
                table: "generated_images",
                type: "INTEGER",
                nullable: false,
                defaultValue: 0);

            migrationBuilder.AddColumn<Guid>(
                name: "job_id",
                table: "generated_images",
                type: "TEXT",
                nullable: false,
                defaultValue: new Guid("00000000-0000-0000-0000-000000000000"));

            migrationBuilder.AddColumn<string>(
                name: "path",
                table: "generated_images",
                type: "TEXT",
                nullable: false,
                defaultValue: "");

            migrationBuilder.AddColumn<int>(
                name: "prompt_index",
                table: "generated_images",
                type: "INTEGER",
                nullable: false,
                defaultValue: 0);

            migrationBuilder.CreateIndex(
                name: "ix_generation_jobs_name",
                table: "generation_jobs",
                column: "name",
                unique: true);

            migrationBuilder.CreateIndex(
                name: "ix_generation_jobs_run_id",
                table: "generation_jobs",
                column: "run_id",
                unique: true);

            migrationBuilder.CreateIndex(
                name: "ix_generated_images_job_id_prompt_index_image_index",
                table: "generated_images",
                columns: new[] { "job_id", "prompt_index", "image_index" },
                unique: true);

            migrationBuilder.AddForeignKey(
                name: "fk_generated_images_generation_jobs_job_id",
                table: "generated_images",
                column: "job_id",
                principalTable: "generation_jobs",
                principalColumn: "id",
                onDelete: ReferentialAction.Cascade);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropForeignKey(
                name: "fk_generated_images_generation_jobs_job_id",
                table: "generated_images");

            migrationBuilder.DropIndex(
                name: "ix_generation_jobs_name",
                table: "generation_jobs");

            migrationBuilder.DropIndex(
                name: "ix_generation_jobs_run_id",
                table: "generation_jobs");

            migrationBuilder.DropIndex(
                name: "ix_generated_images_job_id_prompt_index_image_index",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "chunk_count",
                table: "generation_jobs");

            migrationBuilder.DropColumn(
                name: "image_count",
                table: "generation_jobs");

            migrationBuilder.DropColumn(
                name: "name",
                table: "generation_jobs");

            migrationBuilder.DropColumn(
                name: "output_path",
                table: "generation_jobs");

            migrationBuilder.DropColumn(
                name: "attempt",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "created_at",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "image_index",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "job_id",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "path",
                table: "generated_images");

            migrationBuilder.DropColumn(
                name: "prompt_index",
                table: "generated_images");

            migrationBuilder.RenameColumn(
                name: "spec_json",
                table: "generation_jobs",
                newName: "state");

            migrationBuilder.RenameColumn(
                name: "stage_id",
                table: "generated_images",
                newName: "chunk_id");

            migrationBuilder.RenameColumn(
                name: "sha256",
                table: "generated_images",
                newName: "artifact_id");

            migrationBuilder.AddColumn<long>(
                name: "finished_at",
                table: "generation_jobs",
                type: "INTEGER",
                nullable: true);

            migrationBuilder.AddColumn<string>(
                name: "lora",
                table: "generation_jobs",
                type: "TEXT",
                nullable: true);

            migrationBuilder.CreateTable(
                name: "generation_chunks",
                columns: table => new
                {
                    id = table.Column<Guid>(type: "TEXT", nullable: false),
                    attempt = table.Column<int>(type: "INTEGER", nullable: false),
                    image_count = table.Column<int>(type: "INTEGER", nullable: false),
                    index = table.Column<int>(type: "INTEGER", nullable: false),
                    job_id = table.Column<Guid>(type: "TEXT", nullable: false),
                    state = table.Column<string>(type: "TEXT", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_generation_chunks", x => x.id);
                    table.ForeignKey(
                        name: "fk_generation_chunks_generation_jobs_job_id",
                        column: x => x.job_id,
                        principalTable: "generation_jobs",
                        principalColumn: "id",
                        onDelete: ReferentialAction.Cascade);
                });

            migrationBuilder.CreateIndex(
                name: "ix_generation_jobs_run_id",
                table: "generation_jobs",
                column: "run_id");

            migrationBuilder.CreateIndex(
                name: "ix_generated_images_artifact_id",
                table: "generated_images",
                column: "artifact_id");

            migrationBuilder.CreateIndex(
                name: "ix_generated_images_chunk_id",
                table: "generated_images",
                column: "chunk_id");

            migrationBuilder.CreateIndex(
                name: "ix_generation_chunks_job_id_index",
                table: "generation_chunks",
                columns: new[] { "job_id", "index" },
                unique: true);

            migrationBuilder.AddForeignKey(
                name: "fk_generated_images_artifacts_artifact_id",
                table: "generated_images",
                column: "artifact_id",
                principalTable: "artifacts",
                principalColumn: "id",
                onDelete: ReferentialAction.Restrict);

            migrationBuilder.AddForeignKey(
                name: "fk_generated_images_generation_chunks_chunk_id",
                table: "generated_images",
                column: "chunk_id",
                principalTable: "generation_chunks",
                principalColumn: "id",
                onDelete: ReferentialAction.Cascade);
        }
    }
}
